"""Request counters kept as plain dicts on the hot path, rendered at scrape time.

prometheus-client's metric objects take a lock per update; a dict increment is what a
per-request path can afford. /metrics renders Prometheus text format 0.0.4 from these.
"""

from __future__ import annotations

from bisect import bisect_left

# Seconds: from half a millisecond (a cached or local reply) to 30 s (slow uploads).
_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0
)


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# Layout of a route's list in Metrics.durations: one slot per bucket, one for "over
# the last bound", then these.
_SUM = len(_BUCKETS) + 1
_COUNT = _SUM + 1
_REQ_BYTES = _SUM + 2
_RESP_BYTES = _SUM + 3
_ROUTE_SLOTS = _SUM + 4

# Counters kept in Metrics.counters: name -> (help, label names).
COUNTERS = {
    "meshgate_upstream_requests_total": (
        "Responses from upstreams (or the failure in their place), by cluster and status.",
        ("cluster", "code"),
    ),
    "meshgate_upstream_failures_total": (
        "Upstream failures by cluster and response flag: UF connect failure, UO pool "
        "overflow, UC reset, UPE invalid response, UT timeout, UH no healthy endpoint.",
        ("cluster", "flag"),
    ),
    "meshgate_upstream_retries_total": ("Upstream attempts beyond the first, by route.", ("route",)),
    "meshgate_upstream_cb_overflows_total": (
        "Requests the circuit breaker turned away (503 UO, or a retry not made), by "
        "cluster and the limit that was full: requests, pending, connections, retries.",
        ("cluster", "limit"),
    ),
    "meshgate_upstream_retry_budget_exhausted_total": (
        "Retries not made because the cluster's retry budget was spent, by cluster.",
        ("cluster",),
    ),
    "meshgate_upstream_outlier_ejections_total": (
        "Outlier-detection ejections by cluster; result=max_percent counts ejections "
        "that maxEjectionPercent prevented.",
        ("cluster", "result"),
    ),
    "meshgate_upstream_health_checks_total": (
        "Active health checks by cluster and result (success, failure).",
        ("cluster", "result"),
    ),
    "meshgate_auth_failures_total": (
        "Requests refused by authentication or authorization, by method (jwt, api_key, "
        "basic_auth, ext_auth, oauth2_introspection, authorization) and reason.",
        ("method", "reason"),
    ),
    "meshgate_ratelimit_decisions_total": (
        "Requests a rate-limit rule selected, by route, result (allowed, limited, "
        "failed_open, failed_closed) and type (local, global, plan).",
        ("route", "result", "type"),
    ),
    "meshgate_ratelimit_redis_errors_total": (
        "Calls to the Redis of global rate limits that failed, by error (connection, "
        "timeout, response).",
        ("error",),
    ),
    "meshgate_quota_decisions_total": (
        "Requests a Plan quota applied to, by result (allowed, exceeded, failed_open, "
        "failed_closed).",
        ("result",),
    ),
    "meshgate_cache_lookups_total": (
        "Responses on routes with a CachePolicy, by X-Cache result (HIT, STALE, "
        "REVALIDATED, EXPIRED, MISS, BYPASS).",
        ("result",),
    ),
    "meshgate_validation_failures_total": (
        "Requests a ValidationPolicy refused, by reason (unknown_operation, parameter, "
        "media_type, body_required, not_json, body).",
        ("reason",),
    ),
    "meshgate_local_replies_total": (
        "Responses the proxy made itself (no route, invalid backend, redirects, "
        "preflights, errors), by response flag (empty for filter replies).",
        ("flag",),
    ),
}


def counts_collector(source: dict, metric: str):
    """A Metrics collector for counts another module keeps as plain ints in ``source``
    (labels tuple, or one label value -> count): adds what grew since the last scrape."""
    synced: dict = {}

    def collect(metrics: Metrics) -> None:
        for key, n in list(source.items()):
            delta = n - synced.get(key, 0)
            if delta:
                metrics.inc(metric, key if isinstance(key, tuple) else (key,), delta)
                synced[key] = n

    return collect


class Metrics:
    def __init__(self) -> None:
        # (route, status, gateway "ns/name", listener name) -> count
        # (route, status, gateway, listener, consumer) -> count
        self.requests: dict[tuple[str, int, str, str, str], int] = {}
        # route -> [bucket counts..., over, sum, count, request bytes, response bytes]
        self.durations: dict[str, list] = {}
        self.counters: dict[tuple[str, tuple], float] = {}
        self.downstream_connections = 0
        self.config_reloads = {"accepted": 0, "rejected": 0}
        # Called before state() and render(): counters that other parts keep as plain
        # ints (circuit breakers, outlier detection, health checks) are added here.
        self.collectors: list = []

    def inc(self, name: str, labels: tuple, n: float = 1) -> None:
        key = (name, labels)
        self.counters[key] = self.counters.get(key, 0) + n

    def count_request(
        self, route: str, status: int, gateway: str = "", listener: str = "", consumer: str = ""
    ) -> None:
        key = (route, status, gateway, listener, consumer)
        self.requests[key] = self.requests.get(key, 0) + 1

    def observe(
        self,
        route: str,
        status: int,
        seconds: float,
        bytes_in: int = 0,
        bytes_out: int = 0,
        gateway: str = "",
        listener: str = "",
        consumer: str = "",
    ) -> None:
        key = (route, status, gateway, listener, consumer)
        self.requests[key] = self.requests.get(key, 0) + 1
        h = self.durations.get(route)
        if h is None:
            h = self.durations[route] = [0] * _ROUTE_SLOTS
            h[_SUM] = 0.0
        h[bisect_left(_BUCKETS, seconds)] += 1
        h[_SUM] += seconds
        h[_COUNT] += 1
        h[_REQ_BYTES] += bytes_in
        h[_RESP_BYTES] += bytes_out

    def state(self) -> dict:
        """The raw counters as JSON-able data, for summing across workers."""
        self.collect()
        return {
            "requests": [[*key, n] for key, n in self.requests.items()],
            "durations": self.durations,
            "counters": [[name, list(labels), n] for (name, labels), n in self.counters.items()],
            "downstream_connections": self.downstream_connections,
            "config_reloads": self.config_reloads,
        }

    def absorb(self, state: dict) -> None:
        """Add another worker's ``state()`` into this one."""
        for route, code, gateway, listener, consumer, n in state["requests"]:
            key = (route, int(code), gateway, listener, consumer)
            self.requests[key] = self.requests.get(key, 0) + n
        for route, h in state["durations"].items():
            mine = self.durations.get(route)
            if mine is None:
                self.durations[route] = list(h)
            else:
                for i, v in enumerate(h):
                    mine[i] += v
        for name, labels, n in state.get("counters", ()):
            self.inc(name, tuple(labels), n)
        self.downstream_connections += state["downstream_connections"]
        for result, n in state["config_reloads"].items():
            self.config_reloads[result] = self.config_reloads.get(result, 0) + n

    def route_summary(self, route: str) -> dict:
        h = self.durations[route]
        return {
            "count": h[_COUNT],
            "duration_seconds_sum": h[_SUM],
            "request_bytes": h[_REQ_BYTES],
            "response_bytes": h[_RESP_BYTES],
        }

    @classmethod
    def summed(cls, states: list[dict]) -> Metrics:
        total = cls()
        for state in states:
            total.absorb(state)
        return total

    def collect(self) -> None:
        for collector in self.collectors:
            collector(self)

    def render(self, extra: list[str] | None = None) -> str:
        self.collect()
        lines = [
            "# HELP meshgate_http_requests_total Requests answered, by route, status and consumer.",
            "# TYPE meshgate_http_requests_total counter",
        ]
        for (route, status, gateway, listener, consumer), n in sorted(self.requests.items()):
            lines.append(
                f'meshgate_http_requests_total{{route="{_esc(route)}",code="{status}",'
                f'code_class="{status // 100}xx",gateway="{_esc(gateway)}",'
                f'listener="{_esc(listener)}",consumer="{_esc(consumer)}"}} {n}'
            )
        lines += [
            "# HELP meshgate_http_request_duration_seconds Time from request head to response end.",
            "# TYPE meshgate_http_request_duration_seconds histogram",
        ]
        for route, h in sorted(self.durations.items()):
            r = _esc(route)
            cumulative = 0
            for i, bound in enumerate(_BUCKETS):
                cumulative += h[i]
                lines.append(
                    f'meshgate_http_request_duration_seconds_bucket{{route="{r}",le="{bound:g}"}} {cumulative}'
                )
            lines.append(
                f'meshgate_http_request_duration_seconds_bucket{{route="{r}",le="+Inf"}} {h[_COUNT]}'
            )
            lines.append(f'meshgate_http_request_duration_seconds_sum{{route="{r}"}} {h[_SUM]}')
            lines.append(f'meshgate_http_request_duration_seconds_count{{route="{r}"}} {h[_COUNT]}')
        for metric, slot, what in (
            ("meshgate_http_request_bytes_total", _REQ_BYTES, "Request body bytes received"),
            ("meshgate_http_response_bytes_total", _RESP_BYTES, "Response body bytes sent"),
        ):
            lines += [f"# HELP {metric} {what}, by route.", f"# TYPE {metric} counter"]
            for route, h in sorted(self.durations.items()):
                lines.append(f'{metric}{{route="{_esc(route)}"}} {h[slot]}')
        for metric, (text, label_names) in COUNTERS.items():
            lines += [f"# HELP {metric} {text}", f"# TYPE {metric} counter"]
            for (name, labels), n in sorted(self.counters.items()):
                if name == metric:
                    pairs = ",".join(f'{k}="{_esc(str(v))}"' for k, v in zip(label_names, labels))
                    lines.append(f"{metric}{{{pairs}}} {n:g}")
        lines += [
            "# HELP meshgate_downstream_connections_total Downstream connections accepted.",
            "# TYPE meshgate_downstream_connections_total counter",
            f"meshgate_downstream_connections_total {self.downstream_connections}",
            "# HELP meshgate_config_reloads_total Config reloads, by result.",
            "# TYPE meshgate_config_reloads_total counter",
        ]
        for result, n in self.config_reloads.items():
            lines.append(f'meshgate_config_reloads_total{{result="{result}"}} {n}')
        if extra:
            lines += extra
        return "\n".join(lines) + "\n"
