#!/usr/bin/env python3
"""Benchmark meshgate against nginx, HAProxy and Envoy (DESIGN.md section 5).

    .venv/bin/python bench/run.py [--duration 10] [--connections 50]
                                  [--only meshgate,nginx,haproxy,envoy] [--workers 1]

Starts a fast upstream (a second nginx returning a 100-byte body, or a
uvloop+httptools server when nginx is missing), measures wrk straight against
it, then, for each proxy in turn: starts it on a free port with one route
`/` -> upstream (keep-alive both sides), waits until it answers, warms up, runs
`wrk -t1 -cC -dDs --latency` through it and reads the proxy's CPU time
(utime+stime of the process and its workers, from /proc) before and after.

The figure that counts is requests per proxy CPU-second: on a 2-core box wrk,
the upstream and the proxy share the cores, so raw rps mostly measures the
contention; CPU spent by the proxy per request does not. Added latency is the
proxied p50/p99 minus the direct p50/p99 at the same load.

Prints a table and writes the same data to .bench/results-<timestamp>.json.
This is a benchmark, not a test: it asserts nothing and is not run by CI.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import (
    BODY,
    CPUS,
    MESHGATE_EXTRA_ARGS,
    PROXIES,
    ROOT,
    Managed,
    find_wrk,
    free_port,
    http_status,
    launch,
    meshgate_has_gateway,
    pin_cpus,
    wait_ready,
)
from upstream import start_upstream

ORDER = ["meshgate", "nginx", "haproxy", "envoy"]
READY_DEADLINE_S = 30.0


# --------------------------------------------------------------------------- #
# wrk
# --------------------------------------------------------------------------- #

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


@dataclass
class WrkResult:
    rps: float
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    socket_errors: int
    non_2xx: int
    raw: str


def _lat_ms(value: str, unit: str) -> float:
    return float(value) * _UNIT_MS[unit]


def parse_wrk(out: str) -> WrkResult:
    def need(pattern: str) -> re.Match[str]:
        m = re.search(pattern, out, re.MULTILINE)
        if not m:
            raise RuntimeError(f"cannot parse wrk output (no match for {pattern!r}):\n{out}")
        return m

    lat = {
        m.group(1): _lat_ms(m.group(2), m.group(3))
        for m in re.finditer(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.MULTILINE)
    }
    if "50" not in lat or "99" not in lat:
        raise RuntimeError(f"cannot parse wrk latency distribution (was --latency given?):\n{out}")
    req = need(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)")
    rps = need(r"^Requests/sec:\s+([\d.]+)")
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return WrkResult(
        rps=float(rps.group(1)),
        requests=int(req.group(1)),
        seconds=_lat_ms(req.group(2), req.group(3)) / 1000.0,
        p50_ms=lat["50"],
        p99_ms=lat["99"],
        socket_errors=sum(int(x) for x in sock.groups()) if sock else 0,
        non_2xx=int(non2xx.group(1)) if non2xx else 0,
        raw=out,
    )


def measured_row(name: str, res: WrkResult, cpu: float, binary: str, version: str) -> Row:
    """A table row from one wrk run and the CPU seconds it cost (ratios filled later)."""
    return Row(
        name=name,
        rps=res.rps,
        requests=res.requests,
        p50_ms=res.p50_ms,
        p99_ms=res.p99_ms,
        added_p50_ms=None,
        added_p99_ms=None,
        cpu_s=cpu,
        req_per_cpu_s=res.requests / cpu if cpu > 0 else None,
        ratio_to_nginx=None,
        socket_errors=res.socket_errors,
        non_2xx=res.non_2xx,
        binary=binary,
        version=version,
    )


def run_wrk(
    wrk: str,
    url: str,
    duration: int,
    connections: int,
    threads: int,
    header: str | None = None,
    script: Path | None = None,
) -> WrkResult:
    """One wrk run on the load CPUs; ``header`` (``-H``) and a Lua ``script`` (``-s``)
    shape the requests."""
    argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency"]
    if header:
        argv += ["-H", header]
    if script:
        argv += ["-s", str(script)]
    argv.append(url)
    if CPUS.get("load"):
        argv = ["taskset", "-c", ",".join(map(str, sorted(CPUS["load"]))), *argv]
    r = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration + 60, stdin=subprocess.DEVNULL
    )
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return parse_wrk(r.stdout)


# --------------------------------------------------------------------------- #
# one measurement
# --------------------------------------------------------------------------- #


@dataclass
class Row:
    name: str
    rps: float
    requests: int
    p50_ms: float
    p99_ms: float
    added_p50_ms: float | None
    added_p99_ms: float | None
    cpu_s: float
    req_per_cpu_s: float | None
    ratio_to_nginx: float | None
    socket_errors: int
    non_2xx: int
    binary: str
    version: str


def measure(
    proc: Managed,
    wrk: str,
    url: str,
    args: argparse.Namespace,
    header: str | None = None,
    script: Path | None = None,
) -> tuple[WrkResult, float]:
    """Warm up, then one measured wrk run; returns (wrk result, CPU-s of proc's tree)."""
    if args.warmup > 0:
        run_wrk(wrk, url, args.warmup, args.connections, args.threads, header, script)
    cpu0 = proc.cpu_seconds()
    res = run_wrk(wrk, url, args.duration, args.connections, args.threads, header, script)
    cpu1 = proc.cpu_seconds()
    if not proc.alive():
        raise RuntimeError(f"{proc.name} died during the run\n{proc.log_tail()}")
    return res, cpu1 - cpu0


def body_ok(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200 and r.read() == BODY
    except OSError:
        return False


def version_of(name: str, binary: str) -> str:
    flags = {"wrk": ["-v"], "nginx": ["-v"], "haproxy": ["-v"], "envoy": ["--version"], "meshgate": ["--version"]}
    try:
        r = subprocess.run(
            [binary, *flags.get(name, ["--version"])],
            capture_output=True,
            text=True,
            timeout=20,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (r.stdout + r.stderr).strip()
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line[:160]
    return "?"


def run_proxy(
    name: str,
    binary: str,
    upstream_port: int,
    wrk: str,
    tmp: Path,
    args: argparse.Namespace,
    started: list[Managed],
) -> tuple[WrkResult, float]:
    spec = PROXIES[name]
    workdir = tmp / name
    workdir.mkdir()
    port = free_port()
    admin_port = free_port()
    while admin_port == port:
        admin_port = free_port()
    argv = spec.argv(binary, workdir, port, upstream_port, admin_port, args.workers)
    proc = launch(name, argv, workdir, role="proxy")
    started.append(proc)
    try:
        url = f"http://127.0.0.1:{port}/"
        if spec.ready_path:
            admin = f"http://127.0.0.1:{admin_port}{spec.ready_path}"
            wait_ready(proc, lambda: http_status(admin) == 200, READY_DEADLINE_S, f"200 from {admin}")
        wait_ready(proc, lambda: http_status(url) == 200, READY_DEADLINE_S, f"200 from {url}")
        if not body_ok(url):
            raise RuntimeError(f"{name}: GET {url} did not return the upstream's 100-byte body")
        proc.remember_tree()  # workers forked by now; stop() kills leftovers by these
        return measure(proc, wrk, url, args)
    finally:
        proc.stop()
        started.remove(proc)


# --------------------------------------------------------------------------- #
# output
# --------------------------------------------------------------------------- #


def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def print_table(rows: list[Row]) -> None:
    head = ["proxy", "rps", "p50 ms", "p99 ms", "+p50 ms", "+p99 ms", "CPU-s", "req/CPU-s", "vs nginx"]
    body = [
        [
            r.name,
            _f(r.rps, ",.0f"),
            _f(r.p50_ms, ".3f"),
            _f(r.p99_ms, ".3f"),
            _f(r.added_p50_ms, "+.3f"),
            _f(r.added_p99_ms, "+.3f"),
            _f(r.cpu_s, ".2f"),
            _f(r.req_per_cpu_s, ",.0f"),
            _f(r.ratio_to_nginx, ".2f"),
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(
        c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
    )
    print()
    print(line(head))
    print(line(["-" * w for w in widths]))
    for b in body:
        print(line(b))
    for r in rows:
        if r.socket_errors or r.non_2xx:
            print(f"warning: {r.name}: {r.socket_errors} socket errors, {r.non_2xx} non-2xx/3xx responses")


def finish_rows(rows: list[Row], direct: Row | None) -> None:
    nginx = next((r for r in rows if r.name == "nginx"), None)
    base = nginx.req_per_cpu_s if nginx else None
    for r in rows:
        if r is direct:
            continue
        if direct is not None:
            r.added_p50_ms = r.p50_ms - direct.p50_ms
            r.added_p99_ms = r.p99_ms - direct.p99_ms
        if base and r.req_per_cpu_s is not None:
            r.ratio_to_nginx = r.req_per_cpu_s / base


def write_json(rows: list[Row], meta: dict, complete: bool) -> Path:
    out_dir = ROOT / ".bench"
    out_dir.mkdir(exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = out_dir / f"results-{stamp}.json"
    data = {**meta, "complete": complete, "results": [asdict(r) for r in rows]}
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


# --------------------------------------------------------------------------- #
# main
# --------------------------------------------------------------------------- #


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="seconds of each measured wrk run (default 10)")
    ap.add_argument("--connections", type=int, default=50, help="wrk connections (default 50)")
    ap.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of unmeasured wrk load first (default 2)")
    ap.add_argument(
        "--only",
        default=",".join(ORDER),
        help=f"comma-separated subset of {','.join(ORDER)} (default: all)",
    )
    ap.add_argument(
        "--workers",
        type=int,
        default=1,
        help="workers/threads per proxy: meshgate --workers, nginx worker_processes, "
        "haproxy nbthread, envoy --concurrency (default 1)",
    )
    ap.add_argument("--python-upstream", action="store_true", help="use the uvloop upstream even if nginx exists")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir with configs and logs")
    ap.add_argument(
        "--meshgate-args",
        default="",
        help='extra `meshgate gateway` arguments, e.g. "--access-log /tmp/a.log" or '
        '"--otlp-endpoint http://127.0.0.1:{upstream_port}/v1/traces" (the bench upstream '
        "answers 200 to anything, so it serves as a telemetry sink)",
    )
    ap.add_argument(
        "--no-pin",
        action="store_true",
        help="let the scheduler place processes (default: the proxy gets the last CPU to itself, "
        "wrk and the upstream share the others, so every proxy is measured the same way)",
    )
    args = ap.parse_args(argv)
    MESHGATE_EXTRA_ARGS[:] = shlex.split(args.meshgate_args)
    if not args.no_pin:
        pin_cpus(args.workers)

    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in only if s not in PROXIES]
    if unknown:
        ap.error(f"unknown proxy {', '.join(unknown)}; choose from {', '.join(ORDER)}")
    if args.duration < 1 or args.connections < 1 or args.threads < 1 or args.workers < 1:
        ap.error("--duration, --connections, --threads and --workers must be >= 1")

    wrk = find_wrk()
    if not wrk:
        print("wrk is not installed: run  bash bench/install-peers.sh", file=sys.stderr)
        return 2

    signal.signal(signal.SIGTERM, _on_sigterm)
    tmp = Path(tempfile.mkdtemp(prefix="meshgate-bench-"))
    started: list[Managed] = []
    rows: list[Row] = []
    direct: Row | None = None
    complete = False
    meta = {
        "timestamp": _dt.datetime.now().isoformat(timespec="seconds"),
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "connections": args.connections,
        "meshgate_args": args.meshgate_args,
        "pinned": {role: sorted(c) for role, c in CPUS.items()},
        "wrk_threads": args.threads,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "wrk": version_of("wrk", wrk),
        "skipped": {},
        "failed": {},
    }
    try:
        up_port = free_port()
        upstream, kind = start_upstream(tmp / "upstream", up_port, force_python=args.python_upstream)
        started.append(upstream)
        meta["upstream"] = kind
        print(f"upstream: {kind} on 127.0.0.1:{up_port} (100-byte body)")
        print(
            f"load: wrk -t{args.threads} -c{args.connections} -d{args.duration}s --latency "
            f"(after {args.warmup}s warm-up); proxies with {args.workers} worker(s)"
        )

        print("direct -> upstream ...", flush=True)
        res, cpu = measure(upstream, wrk, f"http://127.0.0.1:{up_port}/", args)
        direct = measured_row(f"direct ({kind})", res, cpu, binary="", version="")
        rows.append(direct)

        for name in [n for n in ORDER if n in only]:
            spec = PROXIES[name]
            binary = spec.find()
            if not binary:
                print(f"skip {name}: not installed ({spec.install_hint})")
                meta["skipped"][name] = "not installed"
                continue
            if name == "meshgate" and not meshgate_has_gateway(binary):
                print(f"skip meshgate: `{binary} gateway` does not exist yet")
                meta["skipped"][name] = "no `meshgate gateway` command"
                continue
            print(f"{name} ({binary}) ...", flush=True)
            try:
                res, cpu = run_proxy(name, binary, up_port, wrk, tmp, args, started)
            except RuntimeError as e:
                print(f"FAILED {name}: {e}", file=sys.stderr)
                meta["failed"][name] = str(e)[:2000]
                continue
            rows.append(measured_row(name, res, cpu, binary, version_of(name, binary)))
        complete = True
    except KeyboardInterrupt:
        print("\ninterrupted: stopping what was started", file=sys.stderr)
    finally:
        for proc in reversed(started):
            proc.stop()
        started.clear()
        if args.keep_tmp:
            print(f"configs and logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    finish_rows(rows, direct)
    if rows:
        print_table(rows)
        path = write_json(rows, meta, complete)
        print(f"\nwritten: {path.relative_to(ROOT)}")
    return 0 if complete else 130


if __name__ == "__main__":
    sys.exit(main())
