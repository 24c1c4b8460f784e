"""Python cost of one proxied request, without sockets (a benchmark, not a test).

Drives the real ServerProtocol, Exchange and UpstreamConnection with in-memory
transports: each request the client "sends" is answered by a canned upstream response
the moment the proxy writes it upstream. What is left is the per-request Python work:
parsing, routing, head building, bookkeeping. Run: .venv/bin/python bench/hotpath.py
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

from meshgate.config.source import build_snapshot
from meshgate.proxy.engine import Engine
from meshgate.upstream.connection import ACTIVE, UpstreamConnection

CONFIG = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: meshgate
  listeners: [{name: http, port: 8080, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: gw}]
  rules:
  - backendRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: up}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: up}
spec:
  endpoints: [{ip: {address: 127.0.0.1, port: 9}}]
"""

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 28 Nov 2026 16:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 100\r\nConnection: keep-alive\r\n\r\n" + b"x" * 100
)


class DownstreamTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def write(self, data) -> None:
        self.written += 1

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 40000) if name == "peername" else default

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class UpstreamTransport(DownstreamTransport):
    def __init__(self) -> None:
        super().__init__()
        self.conn: UpstreamConnection | None = None

    def write(self, data) -> None:
        self.written += 1


async def main(n: int, rounds: int = 7, variant: str = "default") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "c.yaml").write_text(CONFIG)
        snapshot, _ = build_snapshot([tmp])
    engine = Engine()
    if variant == "no-metrics":
        engine.metrics_enabled = False
    elif variant == "access-log":
        from meshgate.telemetry.access_log import AccessLog

        engine.access_log = AccessLog(os.devnull)
    elif variant.startswith("trace-"):
        from meshgate.telemetry.tracing import Tracing

        # Nothing listens on port 9: spans are still encoded (and counted as failed),
        # so the export thread's CPU is in the figure (process_time counts all threads).
        engine.tracing = Tracing("http://127.0.0.1:9/v1/traces", ratio=int(variant[6:]) / 100)
    engine.snapshot = snapshot
    engine.upstreams.apply(snapshot.clusters, snapshot.limits)
    cluster = next(iter(engine.upstreams.clusters.values()))
    pool = cluster.hosts[0].pool
    conn = UpstreamConnection(pool)
    up = UpstreamTransport()
    up.conn = conn
    conn.connection_made(up)
    conn.in_pool = ACTIVE
    pool.active += 1
    cluster.connections += 1
    conn.release(True)
    from meshgate.http.server import ServerProtocol

    proto = ServerProtocol(engine, 8080, snapshot.limits)
    down = DownstreamTransport()
    proto.connection_made(down)
    # Each request: the client's bytes arrive, the proxy writes upstream, the upstream's
    # answer arrives, the proxy writes downstream.
    for _ in range(2000):  # warm-up
        proto.data_received(REQUEST)
        conn.data_received(RESPONSE)
    best = float("inf")
    for _ in range(rounds):  # the best round is the least disturbed by other processes
        t0 = time.process_time()
        for _ in range(n):
            proto.data_received(REQUEST)
            conn.data_received(RESPONSE)
        best = min(best, time.process_time() - t0)
    assert down.written == n * rounds + 2000, (down.written, n)
    if engine.tracing is not None:
        await asyncio.to_thread(engine.tracing.shutdown)
    print(f"[{variant}] {n} requests x {rounds}: best {best / n * 1e6:.1f} us of Python per request "
          f"({n / best:,.0f} req/CPU-s without I/O)")


if __name__ == "__main__":
    import argparse

    import uvloop

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", nargs="?", type=int, default=20000, help="requests per round")
    ap.add_argument(
        "--variant",
        default="default",
        choices=["default", "no-metrics", "access-log", "trace-1", "trace-100"],
        help="telemetry to switch on or off (default: metrics on, no access log, no tracing)",
    )
    args = ap.parse_args()
    uvloop.run(main(args.n, variant=args.variant))
