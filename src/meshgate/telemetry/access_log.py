"""Access log: one JSON line per request, written buffered and flushed a few times a
second by the engine's sweep (and at shutdown).

Off by default; when on, the cost is one orjson dump and one buffered write per
request. The fields follow Envoy's default access-log operators so the lines read the
same way: ``response_flags`` carries the flag of the failure (NR, UF, UC, UT, UH, DPE,
DC, ...), empty when there was none.
"""

from __future__ import annotations

import random
import sys
import time
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from meshgate.proxy.exchange import Exchange


FIELDS = (
    "start_time",
    "method",
    "authority",
    "path",
    "protocol",
    "status",
    "response_flags",
    "duration_ms",
    "bytes_received",
    "bytes_sent",
    "upstream_host",
    "upstream_attempts",
    "request_id",
    "trace_id",
    "client_address",
    "gateway",
    "route",
    "rule",
    "consumer",
)
FORMATS = ("json", "text")


class AccessLog:
    def __init__(
        self,
        path: str,
        fmt: str = "json",
        fields: tuple[str, ...] | None = None,
        sample: float = 1.0,
    ) -> None:
        unknown = set(fields or ()) - set(FIELDS)
        if unknown:
            raise ValueError(
                f"unknown access-log field(s) {', '.join(sorted(unknown))}; "
                f"supported: {', '.join(FIELDS)}"
            )
        if fmt not in FORMATS:
            raise ValueError(f"unknown access-log format {fmt!r}; supported: {', '.join(FORMATS)}")
        self.fields = fields  # None: all
        self.format = fmt
        # Sampling keeps a share of successful requests; failures (5xx or a response
        # flag) are always logged, so sampling never hides an incident.
        self.sample = sample
        self.path = path
        if path == "-":
            self._out: IO[bytes] = sys.stdout.buffer
            self._owned = False
        else:
            self._out = open(path, "ab", buffering=64 * 1024)  # noqa: SIM115
            self._owned = True

    def log_exchange(self, exchange: Exchange, now: float) -> None:
        ctx = exchange.ctx
        if self.sample < 1.0 and exchange.status < 500 and not ctx.flag:
            if random.random() >= self.sample:
                return
        rule = ctx.rule
        upstream = exchange.upstream
        record = {
            "start_time": time.time() - (now - ctx.start_time),
            "method": ctx.method,
            "authority": ctx.authority,
            "path": ctx.raw_target,
            "protocol": "HTTP/" + ctx.http_version,
            "status": exchange.status,
            "response_flags": ctx.flag,
            "duration_ms": round((now - ctx.start_time) * 1000, 3),
            "bytes_received": exchange.body_received,
            "bytes_sent": exchange.bytes_sent,
            "upstream_host": f"{upstream.host}:{upstream.port}" if upstream is not None else None,
            "upstream_attempts": exchange.upstream_attempts,
            "request_id": ctx.request_id or None,
            "trace_id": ctx.trace.trace_id if ctx.trace is not None else None,
            "client_address": ctx.client_ip,
            "gateway": ctx.gateway or None,
            "route": rule.route if rule is not None else None,
            "rule": rule.name if rule is not None and rule.name else None,
            "consumer": ctx.consumer,
        }
        self._write(record)

    def log_rejected(self, client_ip: str, status: int, detail: str) -> None:
        """A request refused before it was parsed whole (malformed, too large, slow)."""
        record = {
            "start_time": time.time(),
            "status": status,
            "response_flags": "DPE",
            "client_address": client_ip,
            "detail": detail,
        }
        self._write(record)

    def _write(self, record: dict) -> None:
        if self.fields is not None:
            record = {k: record.get(k) for k in self.fields}
        if self.format == "json":
            self._out.write(orjson.dumps(record) + b"\n")
        else:
            self._out.write(_text_line(record).encode("utf-8", "replace") + b"\n")

    def flush(self) -> None:
        try:
            self._out.flush()
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        self.flush()
        if self._owned:
            self._out.close()


def _text_line(r: dict) -> str:
    """Envoy's default text format, for the fields present:
    [START] "METHOD PATH PROTOCOL" STATUS FLAGS RECEIVED SENT DURATION "UPSTREAM" ..."""
    def v(key: str) -> str:
        value = r.get(key)
        return "-" if value is None or value == "" else str(value)

    start = r.get("start_time")
    when = (
        datetime.fromtimestamp(start, UTC).isoformat(timespec="milliseconds")
        if isinstance(start, (int, float))
        else "-"
    )
    return (
        f'[{when}] "{v("method")} {v("path")} {v("protocol")}" {v("status")} '
        f'{v("response_flags")} {v("bytes_received")} {v("bytes_sent")} {v("duration_ms")} '
        f'"{v("upstream_host")}" "{v("request_id")}" "{v("authority")}" {v("client_address")} '
        f'{v("route")}'
    )
