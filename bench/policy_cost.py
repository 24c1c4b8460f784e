"""What the per-policy cost benchmarks (jwt_cost.py, ratelimit_cost.py) share: the
config (one Gateway, one HTTPRoute ``/`` to the bench upstream, at most one policy on
the route), the filter it compiles to with a request for it, their common options, and
the end-to-end measurement — a ``meshgate gateway`` (one worker, on its own CPU) under
wrk, counted in requests per proxy CPU-second as bench/run.py counts them."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml
from peers import find_wrk, free_port, http_status, launch, wait_ready
from run import WrkResult, measure

ROOT = Path(__file__).resolve().parent.parent
WARMUP_S = 2
# Policy kinds of meshgate's own API group; the others are Envoy Gateway's.
MESHGATE_KINDS = ("CachePolicy", "ValidationPolicy", "TransformPolicy", "IntrospectionPolicy")


def add_options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--skip-e2e", action="store_true")
    ap.set_defaults(warmup=WARMUP_S, threads=1)  # what bench/run.py's measure reads


def config_docs(port: int, upstream_port: int, policy: tuple[str, str, dict] | None) -> list[dict]:
    """The bench route; ``policy`` = (kind, name, spec without targetRefs) on it, if any."""
    docs = [
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": {"name": "bench"},
         "spec": {"gatewayClassName": "meshgate", "listeners": [{"name": "http", "protocol": "HTTP", "port": port}]}},
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "bench"},
         "spec": {"parentRefs": [{"name": "bench"}], "rules": [{
             "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
             "backendRefs": [{"group": "gateway.envoyproxy.io", "kind": "Backend", "name": "upstream"}]}]}},
        {"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "Backend", "metadata": {"name": "upstream"},
         "spec": {"endpoints": [{"ip": {"address": "127.0.0.1", "port": upstream_port}}]}},
    ]
    if policy is not None:
        kind, name, spec = policy
        target = {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "bench"}
        group = "meshgate.dev" if kind in MESHGATE_KINDS else "gateway.envoyproxy.io"
        docs.append({"apiVersion": f"{group}/v1alpha1", "kind": kind, "metadata": {"name": name},
                     "spec": {"targetRefs": [target], **spec}})
    return docs


def compiled_filter(policy: tuple[str, str, dict]):
    """The first filter on the bench route with ``policy`` on it (port 80, host x)."""
    from meshgate.config.compile import compile_snapshot
    from meshgate.config.compile.lookup import find_match
    from meshgate.config.loader import load_texts

    docs = config_docs(80, 9, policy)
    snap = compile_snapshot(load_texts([("b.yaml", yaml.safe_dump_all(docs))]).resources)
    return find_match(snap, 80, "x", "/").rule.filters[0]


def request_to(headers: list[tuple[str, str]]):
    """A GET / to host x on port 80 with ``headers`` besides host, as the engine makes it."""
    from meshgate.http.headers import Headers
    from meshgate.proxy.context import RequestContext

    return RequestContext("GET", "/", "/", "", Headers([("host", "x"), *headers]),
                          "x", "x", "http", "1.1", "127.0.0.1", 1, 80, "r", 0.0)


def measure_gateway(
    workdir: Path,
    upstream_port: int,
    policy: tuple[str, str, dict] | None,
    args: argparse.Namespace,
    extra_argv: tuple[str, ...] = (),
    header: str | None = None,
    script: Path | None = None,
) -> tuple[WrkResult, float]:
    """Starts ``meshgate gateway`` in ``workdir`` with the bench route and ``policy``,
    waits until it is ready, warms up, then one measured wrk run; (wrk result, proxy
    CPU-s). The gateway is stopped before this returns."""
    port, admin = free_port(), free_port()
    (workdir / "c.yaml").write_text(yaml.safe_dump_all(config_docs(port, upstream_port, policy)))
    argv = [str(ROOT / ".venv/bin/meshgate"), "gateway", "--config", str(workdir / "c.yaml"),
            "--bind", "127.0.0.1", "--admin-port", str(admin), *extra_argv]
    proc = launch("meshgate", argv, workdir, role="proxy")
    try:
        wait_ready(proc, lambda: http_status(f"http://127.0.0.1:{admin}/ready") == 200, 30, "ready")
        return measure(proc, find_wrk(), f"http://127.0.0.1:{port}/", args, header, script)
    finally:
        proc.stop()


def report(label: str, res: WrkResult, cpu: float, width: int) -> tuple[str, float, float, int]:
    """Prints one measured case; its row (label, req per CPU-s, rps, non-2xx)."""
    print(f"  {label:{width}s} {res.requests / cpu:9.0f} req/CPU-s  {res.rps:8.0f} rps"
          f"  non-2xx {res.non_2xx}", flush=True)
    return label, res.requests / cpu, res.rps, res.non_2xx


def print_relative(rows: list[tuple[str, float, float, int]], width: int) -> None:
    """Each row's requests per CPU-second against the first's (no policy)."""
    base = rows[0][1]
    print("\nrelative to no policy:")
    for label, per_cpu, _, _ in rows[1:]:
        print(f"  {label:{width}s} {per_cpu / base:5.2f}x  ({1e6 / per_cpu - 1e6 / base:6.1f} us CPU per request)")
