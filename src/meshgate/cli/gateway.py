"""``meshgate gateway``: serve the Gateways in the config until SIGTERM.

One process runs one engine on uvloop. ``--workers N`` starts N such processes that
share the listener ports with SO_REUSEPORT; each loads, watches and reloads the config
itself. Worker 0 also serves the admin listener, and its /metrics sums the counters
of every worker (read over per-worker unix sockets).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import click

from meshgate.config.snapshot import Limits

log = logging.getLogger("meshgate.gateway")


@click.command()
@click.option("--config", "configs", multiple=True, required=True, help="YAML file or directory; repeatable.")
@click.option("--bind", default="0.0.0.0", show_default=True, help="Address the listeners bind.")
@click.option("--admin-port", default=9901, show_default=True, type=int, help="Admin listener port (0: none).")
@click.option("--admin-bind", default="127.0.0.1", show_default=True, help="Admin listener address.")
@click.option("--gateway", "gateways", multiple=True, help="Serve only this Gateway (NS/NAME); repeatable.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Processes sharing the listeners.")
@click.option("--max-body-bytes", default=0, show_default=True, type=int, help="Request body limit, 413 over it (0: none).")
@click.option("--max-header-bytes", default=60 * 1024, show_default=True, type=click.IntRange(1024), help="Request header fields, in bytes; 431 over it.")
@click.option("--max-header-count", default=100, show_default=True, type=click.IntRange(1), help="Request header fields, in number; 431 over it.")
@click.option("--header-timeout", default=10.0, show_default=True, type=float, help="Seconds to receive a request head (408).")
@click.option("--idle-timeout", default=60.0, show_default=True, type=float, help="Seconds a keep-alive connection may idle.")
@click.option("--connect-timeout", default=5.0, show_default=True, type=float, help="Seconds to open an upstream connection (503 UF); a BackendTrafficPolicy's timeout.tcp.connectTimeout wins.")
@click.option("--upstream-idle-timeout", default=60.0, show_default=True, type=float, help="Seconds a pooled upstream connection may idle; timeout.http.connectionIdleTimeout wins.")
@click.option("--drain-timeout", default=20.0, show_default=True, type=float, help="Seconds to finish in-flight requests on SIGTERM.")
@click.option("--watch-interval", default=1.0, show_default=True, type=float, help="Seconds between config file checks.")
@click.option("--access-log", default=None, metavar="PATH", help="JSON-lines access log to PATH ('-' for stdout); off by default.")
@click.option("--access-log-format", default="json", show_default=True, type=click.Choice(["json", "text"]), help="JSON lines, or Envoy's default text format.")
@click.option("--access-log-fields", default=None, metavar="F1,F2,...", help="Only these access-log fields (see docs/logging.md).")
@click.option("--access-log-sample", default=1.0, show_default=True, type=click.FloatRange(0, 1), help="Share of successful requests logged; failures are always logged.")
@click.option("--no-metrics", is_flag=True, help="Do not count requests (to measure what metrics cost); /metrics keeps gauges only.")
@click.option("--otlp-endpoint", default=None, metavar="URL", help="Export traces with OTLP/HTTP to URL (e.g. http://127.0.0.1:4318/v1/traces); off by default.")
@click.option("--trace-sampling", default=1.0, show_default=True, type=click.FloatRange(0, 1), help="Share of new traces sampled (parent-based: an incoming sampled flag wins).")
@click.option("--redis-url", envvar="MESHGATE_REDIS_URL", show_envvar=True, default=None, metavar="URL", help="Redis for global rate limits: redis://[:PASSWORD@]HOST:PORT/DB, rediss:// for TLS (options as redis-py's from_url takes them).")
@click.option("--redis-timeout", default=0.25, show_default=True, type=click.FloatRange(0.001), help="Seconds to connect to Redis and for each reply; past it the request is decided without Redis.")
@click.option("--rate-limit-fail-closed", is_flag=True, help="When Redis cannot answer, refuse requests a global rate limit selects (500, flag RLSE) instead of letting them pass.")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--worker-index", default=-1, type=int, hidden=True)
def gateway(
    configs: tuple[str, ...],
    bind: str,
    admin_port: int,
    admin_bind: str,
    gateways: tuple[str, ...],
    workers: int,
    max_body_bytes: int,
    max_header_bytes: int,
    max_header_count: int,
    header_timeout: float,
    idle_timeout: float,
    connect_timeout: float,
    upstream_idle_timeout: float,
    drain_timeout: float,
    watch_interval: float,
    access_log: str | None,
    access_log_format: str,
    access_log_fields: str | None,
    access_log_sample: float,
    no_metrics: bool,
    otlp_endpoint: str | None,
    trace_sampling: float,
    redis_url: str | None,
    redis_timeout: float,
    rate_limit_fail_closed: bool,
    log_level: str,
    worker_index: int,
) -> None:
    """Serve the Gateways in the config (all, or those given with --gateway)."""
    logging.basicConfig(
        level=getattr(logging, log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if workers > 1 and worker_index < 0:
        sys.exit(_supervise(workers))
    limits = Limits(
        max_body_bytes=max_body_bytes,
        max_header_bytes=max_header_bytes,
        max_header_count=max_header_count,
        header_timeout=header_timeout,
        idle_timeout=idle_timeout,
        upstream_connect_timeout=connect_timeout,
        upstream_idle_timeout=upstream_idle_timeout,
        drain_timeout=drain_timeout,
    )
    from meshgate.cli.runtime import GatewayRuntime
    from meshgate.ratelimit.redis_counters import configure as configure_redis
    from meshgate.telemetry.access_log import FIELDS

    configure_redis(redis_url, timeout=redis_timeout, fail_closed=rate_limit_fail_closed)

    fields = None
    if access_log_fields:
        fields = tuple(f.strip() for f in access_log_fields.split(",") if f.strip())
        unknown = sorted(set(fields) - set(FIELDS))
        if unknown:
            raise click.BadParameter(
                f"unknown field(s) {', '.join(unknown)}; supported: {', '.join(FIELDS)}",
                param_hint="--access-log-fields",
            )

    worker_dir = os.environ.get("MESHGATE_WORKER_DIR")
    internal = peers = None
    if worker_index >= 0 and worker_dir:
        # Each worker answers its counters on a unix socket; worker 0 sums them.
        internal = os.path.join(worker_dir, f"worker-{worker_index}.sock")
        if worker_index == 0:
            peers = [os.path.join(worker_dir, f"worker-{i}.sock") for i in range(1, workers)]
    runtime = GatewayRuntime(
        paths=list(configs),
        bind=bind,
        admin=(admin_bind, admin_port) if admin_port and worker_index <= 0 else None,
        gateways=set(gateways) or None,
        limits=limits,
        reuse_port=workers > 1 or worker_index >= 0,
        watch_interval=watch_interval,
        access_log=access_log,
        access_log_options={"fmt": access_log_format, "fields": fields, "sample": access_log_sample},
        internal_admin=internal,
        metrics_enabled=not no_metrics,
        otlp_endpoint=otlp_endpoint,
        trace_sampling=trace_sampling,
        peers=peers,
    )
    import uvloop

    sys.exit(uvloop.run(runtime.run()))


def _supervise(workers: int) -> int:
    """Start ``workers`` copies of this command, pass SIGTERM/SIGINT on, restart crashes.

    Workers 1..N-1 start first and each reports ready through a pipe; worker 0, which
    serves the admin listener, starts last, so /ready answers 200 only when every
    worker has its listeners bound.
    """
    argv = [sys.executable, "-m", "meshgate.cli.main", *sys.argv[1:]]
    procs: dict[int, subprocess.Popen] = {}
    worker_dir = tempfile.mkdtemp(prefix="meshgate-workers-")
    os.environ["MESHGATE_WORKER_DIR"] = worker_dir
    stopping = False

    def spawn(i: int, wait_ready: bool) -> None:
        cmd = [*argv, "--worker-index", str(i)]
        if not wait_ready:
            procs[i] = subprocess.Popen(cmd)
            return
        r, w = os.pipe()
        env = dict(os.environ, MESHGATE_READY_FD=str(w))
        procs[i] = subprocess.Popen(cmd, pass_fds=(w,), env=env)
        os.close(w)
        # Blocks until the worker writes (ready) or exits (EOF); bounded by its own
        # startup, which fails fast on a bad config.
        os.read(r, 1)
        os.close(r)

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for i in [*range(1, workers), 0]:
        spawn(i, wait_ready=i != 0)
        if procs[i].poll() is not None:
            stop(signal.SIGTERM, None)
            break
    while True:
        time.sleep(0.2)
        if stopping:
            codes = [p.wait() for p in procs.values()]
            shutil.rmtree(worker_dir, ignore_errors=True)
            return max(codes) if codes else 0
        for i, p in list(procs.items()):
            code = p.poll()
            if code is not None and not stopping:
                log.error("worker %d exited with %s; restarting", i, code)
                spawn(i, wait_ready=False)


__all__ = ["gateway"]
