"""Request counters kept as plain dicts on the hot path, rendered at scrape time.

prometheus-client's metric objects take a lock per update; a dict increment is what a
per-request path can afford. /metrics renders Prometheus text format 0.0.4 from these.
"""

from __future__ import annotations

from bisect import bisect_left

_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.durations: dict[str, list] = {}  # route -> [bucket counts..., sum, count]
        self.downstream_connections = 0
        self.config_reloads = {"accepted": 0, "rejected": 0}

    def count_request(self, route: str, status: int) -> None:
        key = (route, status)
        self.requests[key] = self.requests.get(key, 0) + 1

    def observe(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        h = self.durations.get(route)
        if h is None:
            # One slot per bucket plus one for "over the last bound", then sum, count.
            h = self.durations[route] = [0] * (len(_BUCKETS) + 1) + [0.0, 0]
        h[bisect_left(_BUCKETS, seconds)] += 1
        h[-2] += seconds
        h[-1] += 1

    def state(self) -> dict:
        """The raw counters as JSON-able data, for summing across workers."""
        return {
            "requests": [[route, code, n] for (route, code), n in self.requests.items()],
            "durations": self.durations,
            "downstream_connections": self.downstream_connections,
            "config_reloads": self.config_reloads,
        }

    def absorb(self, state: dict) -> None:
        """Add another worker's ``state()`` into this one."""
        for route, code, n in state["requests"]:
            key = (route, int(code))
            self.requests[key] = self.requests.get(key, 0) + n
        for route, h in state["durations"].items():
            mine = self.durations.get(route)
            if mine is None:
                self.durations[route] = list(h)
            else:
                for i, v in enumerate(h):
                    mine[i] += v
        self.downstream_connections += state["downstream_connections"]
        for result, n in state["config_reloads"].items():
            self.config_reloads[result] = self.config_reloads.get(result, 0) + n

    @classmethod
    def summed(cls, states: list[dict]) -> Metrics:
        total = cls()
        for state in states:
            total.absorb(state)
        return total

    def render(self, extra: list[str] | None = None) -> str:
        lines = [
            "# HELP meshgate_http_requests_total Requests answered, by route and status.",
            "# TYPE meshgate_http_requests_total counter",
        ]
        for (route, status), n in sorted(self.requests.items()):
            lines.append(
                f'meshgate_http_requests_total{{route="{_esc(route)}",code="{status}"}} {n}'
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
                f'meshgate_http_request_duration_seconds_bucket{{route="{r}",le="+Inf"}} {h[-1]}'
            )
            lines.append(f'meshgate_http_request_duration_seconds_sum{{route="{r}"}} {h[-2]}')
            lines.append(f'meshgate_http_request_duration_seconds_count{{route="{r}"}} {h[-1]}')
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
