"""Access log: one JSON line per request, written buffered and flushed a few times a
second by the engine's sweep (and at shutdown).

Off by default; when on, the cost is one orjson dump and one buffered write per
request. The fields follow Envoy's default access-log operators so the lines read the
same way: ``response_flags`` carries the flag of the failure (NR, UF, UC, UT, UH, DPE,
DC, ...), empty when there was none.
"""

from __future__ import annotations

import sys
import time
from typing import IO, TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from meshgate.proxy.exchange import Exchange


class AccessLog:
    def __init__(self, path: str) -> None:
        self.path = path
        if path == "-":
            self._out: IO[bytes] = sys.stdout.buffer
            self._owned = False
        else:
            self._out = open(path, "ab", buffering=64 * 1024)  # noqa: SIM115
            self._owned = True

    def log_exchange(self, exchange: Exchange, now: float) -> None:
        ctx = exchange.ctx
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
            "client_address": ctx.client_ip,
            "gateway": ctx.gateway or None,
            "route": rule.route if rule is not None else None,
            "rule": rule.name if rule is not None and rule.name else None,
        }
        self._out.write(orjson.dumps(record) + b"\n")

    def log_rejected(self, client_ip: str, status: int, detail: str) -> None:
        """A request refused before it was parsed whole (malformed, too large, slow)."""
        record = {
            "start_time": time.time(),
            "status": status,
            "response_flags": "DPE",
            "client_address": client_ip,
            "detail": detail,
        }
        self._out.write(orjson.dumps(record) + b"\n")

    def flush(self) -> None:
        try:
            self._out.flush()
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        self.flush()
        if self._owned:
            self._out.close()
